"""jaxcluster: differentiable forward modelling of X-ray galaxy-cluster surveys."""
