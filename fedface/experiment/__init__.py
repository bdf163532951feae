"""The experimenter: the role that holds what neither the clients nor the attacker may -- the clients' key (a
simulation's, ``keys``), their recorded ground truth (``ground_truth``) and the run folders -- and scores what an
attack recovered against it (``scoring``, ``recorded``). Attacks (``fedface.attacks``) are algorithms: they get an
observation and return tensors; this layer runs them on a run's observations and judges the result.
"""
