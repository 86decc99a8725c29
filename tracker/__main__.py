from tracker.tools.cli import main

main()
