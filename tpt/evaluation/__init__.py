"""Benchmark evaluation: offline test sets, lm-eval task configs, sandboxed code scoring and the lm-eval runner.

Import the submodules directly (``tpt.evaluation.runner`` etc.); this package stays import-light because the
sandbox's launcher and lm-eval's generated hooks module load parts of it in fresh interpreters.
"""
