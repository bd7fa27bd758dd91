"""The hidden control directories (``.icefs/``): reading them, writing them.

* `render`: which control files exist and the text they show (pure; the CLI
  renders the same documents with it);
* `files`: `ControlFiles`, what the core asks: open, read, write, ask, release;
* `commands`: what writing a command file does (refresh, commit, discard, reset,
  branch, tag);
* `queries`: the JSON requests of the query files (log, diff, ops);
* `status`: the mount's and each view's status, and the mount's stats.

Nothing is imported here, so `render` stays cheap to import.
"""
