"""Month approval: the client approves a month of its purchase buffer ("Zatwierdź miesiąc") or unlocks it again."""
