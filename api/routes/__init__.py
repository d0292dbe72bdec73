"""The API's routes, one module per resource; each only translates HTTP."""
