"""Build contexts: packed and digested on the caller, stored in the context store, unpacked with checks on the worker."""
