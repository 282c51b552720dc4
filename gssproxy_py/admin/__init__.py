"""Administration: the daemon's call counters (`stats`), its admin program
(`program`, served on the root-only admin socket), and the `gssproxy-py-ctl`
command (`ctl`) with its outputs (`render`), configuration checks
(`check`) and token PIN provisioning (`pin`)."""
