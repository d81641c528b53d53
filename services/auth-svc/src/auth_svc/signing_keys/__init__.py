"""The Ed25519 keys that sign access tokens: the JWKS, signing, verifying, rotation."""
