from services.processor.main import main

main()
