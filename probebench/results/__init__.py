"""Result records (one JSON per encoder x dataset x task) and the leaderboard merged from them."""
