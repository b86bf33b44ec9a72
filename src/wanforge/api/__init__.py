"""wanforge.api"""
