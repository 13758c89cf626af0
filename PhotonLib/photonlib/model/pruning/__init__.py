"""Choosing which visual tokens reach the language model.

* :mod:`.interface`: the :class:`TokenPruner` protocol, its inputs and :class:`TokenSelection`;
* :mod:`.its`: Instruction-conditioned Token Scheduling's scores and threshold (Photon's method);
* :mod:`.sgp`: Surrogate Gradient Propagation through the hard drop;
* :mod:`.pruners`: the language-stage pruners (ITS, none, random-k);
* :mod:`.baselines` (with :mod:`.vision_attention`): the paper's VisionZip and HiPrune baselines;
* :mod:`.budget`: the kept count of a fixed budget; :mod:`.registry`: every pruner by name.

Dependencies run one way: interface, budget, its <- pruners, baselines <- registry.
"""
