"""What a request is: build and push specs, their one validator, names, keys, seals, results.

Nothing here does I/O: the caller and the worker both call it."""
