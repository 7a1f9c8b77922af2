"""Running a job over many inputs: the job (`job`), the one run loop every modality goes through
(`loop`), resume markers (`resume`), the progress line (`progress`) and the Ray engine (`ray`),
which calls the same loop on its actors. Imports `io`, `explainer` and below; never `cli`."""
