from services.worker.main import WORKER

WORKER.main()
