from fastapi import APIRouter

from ksef_gateway.api import communication, credentials, invoices, sync

api_router = APIRouter()
api_router.include_router(credentials.router)
api_router.include_router(communication.router)
api_router.include_router(sync.router)
api_router.include_router(invoices.router)
