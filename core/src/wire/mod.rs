//! Everything that decodes bytes from outside. Every decoder is total.
