"""The host-wide, content-addressed blob cache shared by every mount and ``artfs get``."""
