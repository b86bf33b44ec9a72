"""wanforge.media"""
