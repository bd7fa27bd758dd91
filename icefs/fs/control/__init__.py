"""The hidden control directories (``.icefs/``): reading them, writing them.

* `files`: `ControlFiles`, what the core asks: open, read, write, ask, release;
* `commands`: what writing a command file does (refresh, commit, discard, reset,
  branch, tag);
* `queries`: the JSON requests of the query files (log, diff, ops);
* `status`: the mount's and each view's status, and the mount's stats.

Which control files exist and how their text looks is `icefs.fs.controltext`
(pure: the namespace and the CLI use it too).
"""
