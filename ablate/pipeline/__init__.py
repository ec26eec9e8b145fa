"""How a config becomes a results row (see README.md in this folder).

``build`` (config -> built objects, combinations checked, identity) -> ``train`` (train once per training key,
``lit`` the LightningModule, ``checkpointing``) -> ``evaluation`` (samples, metrics, rows) -> ``runner`` (one job
end to end; standalone checkpoint evaluation); ``jobs`` holds what every job needs around that (folders, W&B,
failure rows, launch checks), ``specs`` the non-math settings groups, ``metric_names`` every logged name.
"""
