"""The training stages: one skeleton (:mod:`.base`) and a small module per stage that plugs its model, batches,
loss step and evaluation into it (:mod:`.sft`, :mod:`.reward`, :mod:`.safety`, :mod:`.dpo`, :mod:`.ppo`)."""
