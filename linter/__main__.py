from modelcheck.cli import main

main()
