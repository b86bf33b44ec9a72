"""wanforge.store"""
