"""Infrastructure every wing uses: errors, atomic files, ownership, typed checks, threads."""
