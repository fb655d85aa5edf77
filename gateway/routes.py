"""Every route handler of the gateway, in one list (route-walk tests enumerate the app from it)."""

from __future__ import annotations

from typing import Any

from gateway.agent_api import AGENT_ROUTES
from gateway.api import api_keys as api_keys_api
from gateway.api import audit as audit_api
from gateway.api import auth as auth_api
from gateway.api import billing as billing_api
from gateway.api import clusters as clusters_api
from gateway.api import dashboard as dashboard_api
from gateway.api import invites as invites_api
from gateway.api import jobs as jobs_api
from gateway.api import members as members_api
from gateway.api import operator as operator_api
from gateway.api import orgs as orgs_api
from gateway.api import policies as policies_api
from gateway.api import sso as sso_api
from gateway.api import usage as usage_api
from gateway.health import healthz, readyz
from gateway.web import accounts as account_pages
from gateway.web import admin as admin_pages
from gateway.web import billing as billing_pages
from gateway.web import clusters as cluster_pages
from gateway.web import dashboard as dashboard_pages
from gateway.web import invite_accept, jobs_pages, org_pages
from gateway.web import operator as operator_pages
from gateway.web import policies as policy_pages
from gateway.web import sso as sso_pages
from gateway.web import usage as usage_pages
from gateway.webhooks import STRIPE_WEBHOOK_ROUTES

__all__ = ["route_handlers"]

ACCOUNTS_AND_ORGS: list[Any] = [
    auth_api.api_signup, auth_api.api_login, auth_api.api_logout, auth_api.me,
    orgs_api.list_orgs, orgs_api.create_org, orgs_api.get_org, orgs_api.delete_org, orgs_api.restore_org,
    account_pages.landing, account_pages.signup_form, account_pages.signup_submit, account_pages.login_form,
    account_pages.login_submit, account_pages.logout_submit, account_pages.verify, account_pages.verify_resend,
    account_pages.reset_form, account_pages.reset_submit, account_pages.reset_confirm_form,
    account_pages.reset_confirm_submit, account_pages.dev_mailbox,
    org_pages.orgs_page, org_pages.orgs_create, org_pages.org_home, org_pages.org_switch, org_pages.org_delete,
    org_pages.org_restore,
]


def route_handlers() -> list[Any]:
    return [
        healthz,
        readyz,
        *ACCOUNTS_AND_ORGS,
        sso_api.get_sso,
        sso_api.put_sso,
        sso_api.delete_sso,
        sso_pages.sso_settings_page,
        sso_pages.sso_save_page,
        sso_pages.sso_delete_page,
        sso_pages.sso_login_page,
        sso_pages.sso_login_start,
        sso_pages.sso_callback,
        # operator console (platform admins; 404 for everyone else)
        operator_api.list_orgs,
        operator_api.list_users,
        operator_api.suspend_org,
        operator_api.restore_org,
        operator_pages.operator_orgs_page,
        operator_pages.operator_users_page,
        operator_pages.operator_suspend,
        operator_pages.operator_restore,
        # org admin console: members, invites, API keys, audit log (API, pages, invite acceptance)
        members_api.list_members,
        members_api.change_member_role,
        members_api.remove_member,
        members_api.leave_org,
        invites_api.list_invites,
        invites_api.create_invite,
        invites_api.revoke_invite,
        invites_api.accept_invite,
        api_keys_api.list_api_keys,
        api_keys_api.create_api_key,
        api_keys_api.revoke_api_key,
        audit_api.list_audit_events,
        *admin_pages.admin_route_handlers(),
        invite_accept.accept_invite_page,
        invite_accept.accept_invite_submit,
        # clusters: REST API and the agent API (/agent/v1, authenticated by the agent's own credential)
        *clusters_api.CLUSTER_API_ROUTES,
        *cluster_pages.cluster_page_routes(),
        *AGENT_ROUTES,
        # jobs and governance policies (API and the policies page)
        *jobs_api.JOB_API_ROUTES,
        *policies_api.POLICY_API_ROUTES,
        *policy_pages.policy_page_routes(),
        # monitoring dashboards (org and operator): JSON and pages
        *dashboard_api.DASHBOARD_API_ROUTES,
        *dashboard_pages.DASHBOARD_PAGE_ROUTES,
        # job pages: list, submit form, detail with logs, cancel, re-run
        *jobs_pages.JOB_PAGE_ROUTES,
        # usage: JSON, CSV and the page (the agent's upload is in AGENT_ROUTES)
        *usage_api.USAGE_API_ROUTES,
        *usage_pages.USAGE_PAGE_ROUTES,
        # billing: plan, card, invoices (API and pages), Stripe's webhooks, the operator's period close
        *billing_api.BILLING_API_ROUTES,
        *billing_pages.billing_page_routes(),
        *STRIPE_WEBHOOK_ROUTES,
    ]
