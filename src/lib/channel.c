/* channel.c - placeholder, being written. */
