from fastapi import APIRouter

from buffer_svc.api import whoami

api_router = APIRouter()
api_router.include_router(whoami.router)
