"""The web console (``streamflow ui``): ``server.py`` and the page it serves, ``console.html``."""
