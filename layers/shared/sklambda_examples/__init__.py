"""A worked example of bringing your own pipeline, with a custom transformer (training/examples/forest_ratios.toml).

Where custom code lives, and why:

- Classes your pipeline uses that scikit-learn does not have (transformers, estimators) live in a package under
  layers/shared/, like this one. That folder is the SharedCodeLayer: the same module is importable by training
  on a laptop (`make dev` puts layers/shared on the path), by the retrain function, and by the scikit-learn
  serving runtime, which unpickles the fitted pipeline. The predict function never imports training/, so a class
  defined there could be trained but never served.
- Such a module imports only what the scikit-learn serving runtime has: numpy, pandas, scikit-learn (+ the
  standard library). `ratios.py` here.
- Its skl2onnx converter (a shape calculator and a converter, registered when the module is imported) lives in
  a module of its own next to it, because skl2onnx exists only where training runs; the configuration names it
  (`[onnx] converters = ["sklambda_examples.ratios_onnx"]`) and training imports it before converting.
  `ratios_onnx.py` here. Without a converter the version is stored for the scikit-learn runtime only and is
  served with the template's ServingRuntime=sklearn.
- The function that builds the pipeline ([pipeline] factory) may live anywhere training can import; keeping it
  next to its classes keeps the example in one place. `pipelines.py` here.
"""
