"""What the Lambda functions run (and the local server hosts): the loaded model, tokens, users, the web layer.

Imports only `recommender.core` and the serving dependencies (numpy, annoy, fastapi, PyJWT, passlib): never
training, tools or local code, never pandas or scipy. The Lambda layer ships `core` and `serving` only.
"""
