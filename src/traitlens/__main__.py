from traitlens.cli import main

main()
