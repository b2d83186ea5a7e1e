"""normtut: reference implementations for the normtut book.

How PyTorch models hold, initialize, share, normalize and update their parameters. Every
module is a drop-in for its PyTorch twin and is tested against it; the chapters of the book
import these modules instead of re-defining helpers. Import the module you need, e.g.
``from normtut import normalization as nnorm``; ``help(normtut.<module>)`` documents each.

Modules:

- ``normtut.config``: quick mode (``NORMTUT_QUICK=1``), the data folder
  (``NORMTUT_DATA``), ``set_seed`` and ``glue`` (numbers for the book's prose).
- ``normtut.data``: Fashion-MNIST without torchvision (IDX reader, checksums, search,
  download, d2l's ``load_data_fashion_mnist``), ``prepare_torchvision_fashion_mnist`` (d2l's
  and torchvision's loader offline), synthetic data.
- ``normtut.train``: ``try_gpu``, ``Timer``, ``Accumulator``, ``accuracy``,
  ``evaluate_accuracy``, ``train`` and d2l's ``train_ch6``, with a progress bar and a history.
- ``normtut.plot``: the book's figures (curves, live plot, histograms, spectra).
- ``normtut.params``: inspecting parameters (tables, tied parameters, gradient statistics).
- ``normtut.init``: Xavier and Kaiming initialization from scratch, as ``torch.nn.init``.
- ``normtut.normalization``: ``batch_norm`` and ``BatchNorm1d/2d/3d`` (hand-written
  backward), ``LayerNorm``, ``GroupNorm``, ``RMSNorm``, ``update_bn`` and BN-LeNet.
- ``normtut.parametrizations``: ``weight_norm``, ``spectral_norm``, ``orthogonal``.
- ``normtut.optim``: ``SGD``, ``Adagrad``, ``RMSprop``, ``Adadelta``, ``Adam``, ``AdamW``,
  ``RAdam``, ``Muon``, as
  ``torch.optim``'s; ``clip_grad_norm_`` and ``clip_grad_value_``, as ``torch.nn.utils``'.
- ``normtut.lr_scheduler``: the learning-rate schedulers of ``torch.optim.lr_scheduler``
  (step, multi-step, exponential, cosine, linear warmup, sequential, one-cycle, plateau).
- ``normtut.amp``: ``GradScaler``, dynamic loss scaling, as ``torch.amp.GradScaler``.
- ``normtut.distributed``: a process launcher for notebooks, ``SyncBatchNorm`` and a ZeRO-1
  ``ZeroRedundancyOptimizer``, on ``torch.distributed`` (gloo on the CPU, NCCL on GPUs).
- ``normtut.rnn``: a plain tanh RNN (``VanillaRNN``), the memory task (``memory_batch``)
  and the gradient per time step (``state_grad_norms``), for exploding and vanishing
  gradients.
- ``normtut.landscapes``: two-dimensional loss surfaces for watching optimizers move.
- ``normtut.grading``: the otter-grader plugin of the autograded assignments (the checkers
  themselves ship only in the autograder).

Coming from d2l? The book's appendix "Coming from d2l" maps d2l's functions to these.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("normtut")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
