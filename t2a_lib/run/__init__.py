"""Process machinery: the runner over the notebooks, worker processes, files, benchmarks.

- ``runner``    ``python -m t2a_lib.run``: the profile's notebooks in order with papermill, then the report
- ``params``    checking notebook parameters before anything runs
- ``sources``   notebooks checked against their ``.py`` sources; run folders kept out of the source tree
- ``lock``      one runner per run folder (``.runner.lock``: pid and host)
- ``preflight`` ``--check``: every checkpoint and data set a profile names, present, absent or wrong
- ``parallel``  independent CPU jobs in worker processes at a fixed number of threads
- ``files``     JSON records and safetensors weights whose errors name the file
- ``launch``    DPO/BATON in one process or many (``accelerate launch``)
- ``bench``     ``python -m t2a_lib.run.bench``: speed benchmarks; ``scale`` at Tango's size
"""
