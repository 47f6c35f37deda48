"""The write side: pushed entries turned into Redis commands and scripts (all or none), the
shared pipelined write lanes, and stream metadata at ``XMETA:{sid}``."""
