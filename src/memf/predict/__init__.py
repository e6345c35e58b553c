"""Predicting upcoming streams with a trained experiment: the model bundle (:mod:`memf.predict.bundle`), the predictor
(:mod:`memf.predict.predictor`), intervals (:mod:`memf.predict.intervals`) and drivers (:mod:`memf.predict.drivers`).

    bundle = memf.load_bundle("results/bundles/memf")
    frame = bundle.predict("next_week/")          # a raw dataset (docs/data-format.md), sales optional

See docs/predict.md. Importing this package imports nothing heavy; torch is loaded with the bundle.
"""
