"""wanforge.training"""
