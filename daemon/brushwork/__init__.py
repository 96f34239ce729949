"""Brushwork: neural style transfer (Gatys et al. 2015) as a daemon, a CLI and a GIMP 3 filter.

This module stays import-light (standard library only): the GIMP plug-in ships copies of
``brushwork.protocol``, ``brushwork.settings`` and ``brushwork.client`` as a package beside it.
"""

__version__ = "0.1.0"
