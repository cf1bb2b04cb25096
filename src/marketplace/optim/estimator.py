from .forward_gradient import *  # noqa: F401,F403  old path of forward_gradient.py, for imports outside optim/
