/* transfer.c - placeholder, being written. */
