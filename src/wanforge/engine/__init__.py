"""wanforge.engine"""
