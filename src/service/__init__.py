"""The HTTP service: app factory, lifespan, error handlers, request parsing and one router per
concern (predict; operations; the loop).

Owns everything HTTP. May import the serving core (contract, predictor, artifacts), the loop and the
agent. Must never import training code (train, features, evaluate): the image serves, it does not
learn.
"""
