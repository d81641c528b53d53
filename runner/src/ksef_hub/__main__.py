from ksef_hub.cli import main

main()
