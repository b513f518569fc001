"""The service layer: what every endpoint does, as plain functions over a `Service` (the loaded model,
the catalogue and the limits), with no HTTP in them: they take checked values and bytes, and raise
`ServiceError(code, detail)` or the lower layers' domain errors. The routes (service/api/routes/)
parse a request, call one of these functions and answer; the way full-stack-fastapi-template keeps its
routes over its crud module."""
