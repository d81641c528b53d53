"""KSeF 2.0 simulator. The API itself is built in its own issue; this is the package's place in the workspace."""
