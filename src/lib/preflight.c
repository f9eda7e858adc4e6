/* preflight.c - placeholder, being written. */
