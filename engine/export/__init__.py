"""Export of a trained adapter for use outside the app, verified before it is kept (the ``export`` job).

- :mod:`.job`: the job's steps, from the adapter folder to OUT;
- :mod:`.source`: the adapter, its base and run, and the kind of model it makes;
- :mod:`.merge`: base + adapter in full precision, merged (a reward model or safety classifier into a transformers
  sequence classifier);
- :mod:`.gguf_file` and :mod:`.gguf_vocab`: the merged model and its tokenizer as one GGUF file for llama.cpp;
- :mod:`.ollama`: the Modelfile derived from the chat template;
- :mod:`.checks`: greedy generations, the GGUF read back, classifier scores;
- :mod:`.card`: the model card; :mod:`.output`: writing, disk-full errors and the build folder.

The command line and the window start it the same way: :func:`workbench.model_export.start_export`.
"""
