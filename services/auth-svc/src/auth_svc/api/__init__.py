from fastapi import APIRouter

from auth_svc.api import organisations, sessions

api_router = APIRouter()
api_router.include_router(sessions.router)
api_router.include_router(organisations.router)
api_router.include_router(organisations.admin_router)
