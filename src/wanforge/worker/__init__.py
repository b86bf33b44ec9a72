"""wanforge.worker"""
