"""Label Studio ML backend: ``unetkit label-studio RUN`` serves a run to a Label Studio project.

:mod:`.backend` answers the protocol (setup, predict, webhook) without HTTP, :mod:`.app` puts it on FastAPI
routes; :mod:`.labelling_config` reads the project's config, :mod:`.images` fetches task images from Label
Studio, :mod:`.predictions` turns label maps into results and annotations into masks, :mod:`.versions` keeps
the model versions, :mod:`.training` and :mod:`.finetune` fine-tune on new annotations in a background process.
"""
