"""The report: figures drawn from the leaderboard (`plots`) and the HTML and Markdown documents (`build`)."""
