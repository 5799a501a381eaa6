"""Job functions for the worker-process tests, in a module that imports only torch: a spawned
worker imports the module of the function it runs, so these start in about a second instead of
importing the test module's model code."""

import torch


def threads_and_square(x):
    return torch.get_num_threads(), x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x
