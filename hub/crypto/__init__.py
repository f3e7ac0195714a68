"""Keys, development keys, XML-DSig and the sender-signature policy."""
