"""Service accounts: a ``default`` one in every namespace, and a token Secret for every one.

Two controllers, as kube-controller-manager's ``serviceaccount`` and ``serviceaccount-token``:

:class:`ServiceAccountController` (key: a namespace's name)
    Every active namespace has a ServiceAccount named ``default``: created when the
    namespace appears, created again when someone deletes it. A terminating namespace gets
    none (the API server would refuse it anyway).

:class:`TokenController` (keys: ``namespace/name`` of ServiceAccounts, and of Secrets)
    Every ServiceAccount references (in ``secrets``) a Secret of type
    ``kubernetes.io/service-account-token`` with annotations
    ``kubernetes.io/service-account.name``/``.uid`` and data ``token`` (a JWT signed RS256 with
    ``--service-account-private-key-file``, Kubernetes' legacy claims, see
    :mod:`podling.api.tokens`), ``namespace`` and ``ca.crt`` (the CA this controller manager
    trusts the API server by: what a pod needs to talk to it). Token Secrets of accounts
    that are gone, or were recreated (another uid), are deleted, which revokes their tokens;
    a deleted token Secret's reference is removed from its account, and the account gets a
    new one. A token Secret made by hand (type and name annotation only) gets its token,
    namespace, ca.crt and uid annotation filled in. Existing tokens are never re-signed.

Invariants: every reconcile reads the informer caches and makes the smallest writes; a
cache that has not seen an object yet is never taken as proof that it is gone (a live GET
decides before anything is deleted or created); a Secret this controller created for an
account is remembered until the account references it, so a failed reference update never
leads to a second Secret. Without a signing key the token controller logs that it is
disabled and does nothing, as kube-controller-manager does.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import secrets as random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from podling.api import meta, tokens
from podling.api.resources import Resource, find
from podling.client.http import ApiError, is_already_exists, is_not_found
from podling.client.informer import Obj
from podling.client.workqueue import run_workers
from podling.controllers.base import Context

log = logging.getLogger("podling.controllers.serviceaccount")

_NAMESPACES = find(group="", version="v1", plural="namespaces")
_ACCOUNTS = find(group="", version="v1", plural="serviceaccounts")
_SECRETS = find(group="", version="v1", plural="secrets")
assert _NAMESPACES is not None and _ACCOUNTS is not None and _SECRETS is not None

DEFAULT = "default"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet
_BY_ACCOUNT = "serviceaccount-token/account"  # token Secrets by "namespace/account name"
_BY_NAMESPACE = "serviceaccount-token/namespace"  # ServiceAccounts by namespace


class ServiceAccountController:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.queue = context.metrics.queue("serviceaccount")
        self.namespaces = context.informers.informer(_NAMESPACES)
        self.accounts = context.informers.informer(_ACCOUNTS)
        self.namespaces.add_handlers(on_add=self._enqueue_namespace,
                                     on_update=lambda old, new: self._enqueue_namespace(new))
        self.accounts.add_handlers(on_delete=self._on_account_deleted)

    def _enqueue_namespace(self, namespace: Obj) -> None:
        self.queue.add(meta.name(namespace))

    def _on_account_deleted(self, account: Obj) -> None:
        if meta.name(account) == DEFAULT:
            self.queue.add(meta.namespace(account))

    async def run(self, *, workers: int) -> None:
        try:
            await run_workers(self.queue, self.context.reconciler("serviceaccount", self.reconcile), workers=workers)
        finally:
            self.queue.shutdown()

    async def reconcile(self, name: str) -> None:
        namespace = self.namespaces.get(name)
        if namespace is None or (namespace.get("metadata") or {}).get("deletionTimestamp") \
                or (namespace.get("status") or {}).get("phase", "Active") != "Active":
            return
        if self.accounts.get(f"{name}/{DEFAULT}") is not None:
            return
        try:
            await self.context.api.create(_ACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                      "metadata": {"name": DEFAULT}}, namespace=name)
        except ApiError as err:
            if is_already_exists(err):
                return
            if err.code == 403:  # the namespace started terminating meanwhile
                log.debug("namespace %s: no default service account: %s", name, err.message)
                return
            raise
        log.info("namespace %s: created service account %s", name, DEFAULT)


class TokenController:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.accounts_queue = context.metrics.queue("serviceaccount-token")
        self.secrets_queue = context.metrics.queue("serviceaccount-token-secrets")
        self.accounts = context.informers.informer(_ACCOUNTS)
        self.secrets = context.informers.informer(_SECRETS)
        self.accounts.add_index(_BY_NAMESPACE, lambda account: [meta.namespace(account)])
        self.secrets.add_index(_BY_ACCOUNT, _account_key_of)
        self.accounts.add_handlers(on_add=self._account_changed, on_update=lambda old, new: self._account_changed(new),
                                   on_delete=self._account_changed)
        self.secrets.add_handlers(on_add=self._secret_changed, on_update=lambda old, new: self._secret_changed(new),
                                  on_delete=self._secret_changed)
        self._key: rsa.RSAPrivateKey | None = None
        self._ca = b""
        self._created: dict[str, str] = {}  # account uid -> the token Secret made for it, until referenced

    def _account_changed(self, account: Obj) -> None:
        key = meta.object_key(account)
        self.accounts_queue.add(key)
        for secret in self.secrets.by_index(_BY_ACCOUNT, key):
            self.secrets_queue.add(meta.object_key(secret))

    def _secret_changed(self, secret: Obj) -> None:
        if secret.get("type") != tokens.SECRET_TYPE:
            return  # only token Secrets are this controller's business (and referenced as tokens)
        self.secrets_queue.add(meta.object_key(secret))
        for account in _account_key_of(secret):
            self.accounts_queue.add(account)

    async def run(self, *, workers: int) -> None:
        key_file = self.context.options.service_account_key_file
        if key_file is None:
            log.warning("serviceaccount-token is disabled: no --service-account-private-key-file to sign tokens with")
            self.accounts_queue.shutdown()
            self.secrets_queue.shutdown()
            return
        self._key = tokens.load_private_key(key_file)
        self._ca = _ca_bytes(self.context)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(run_workers(
                    self.accounts_queue, self.context.reconciler("serviceaccount-token", self.reconcile_account),
                    workers=workers))
                group.create_task(run_workers(
                    self.secrets_queue, self.context.reconciler("serviceaccount-token-secrets", self.reconcile_secret),
                    workers=workers))
        finally:
            self.accounts_queue.shutdown()
            self.secrets_queue.shutdown()

    # ---- accounts ----------------------------------------------------------------------------

    async def reconcile_account(self, key: str) -> None:
        """The account references a token Secret of its own (made if it has none)."""
        account = self.accounts.get(key)
        if account is None or (account.get("metadata") or {}).get("deletionTimestamp"):
            return  # its token Secrets are deleted by reconcile_secret
        uid = (account.get("metadata") or {}).get("uid") or ""
        referenced = [str(r.get("name") or "") for r in account.get("secrets") or ()]
        owned = sorted(meta.name(s) for s in self.secrets.by_index(_BY_ACCOUNT, key)
                       if _belongs(s, account) and not (s.get("metadata") or {}).get("deletionTimestamp"))
        if any(name in owned for name in referenced):
            self._created.pop(uid, None)
            return
        # The secrets cache may trail: a referenced Secret, or one made here for this account a
        # moment ago, can exist without being cached yet. A live GET decides.
        namespace = meta.namespace(account)
        unseen = [n for n in referenced if self.secrets.get(f"{namespace}/{n}") is None]
        if uid in self._created:
            unseen.append(self._created[uid])
        for name in unseen:
            live = await self._live(_SECRETS, namespace, name)
            if live is not None and _belongs(live, account):
                if name in referenced:
                    self._created.pop(uid, None)
                    return
                owned.insert(0, name)
        name = owned[0] if owned else await self._create_token(account)
        try:
            await self.context.api.patch(_ACCOUNTS, namespace=namespace, name=meta.name(account),
                                         body={"secrets": [{"name": name}]}, patch_type="strategic")
        except ApiError as err:
            if not is_not_found(err):
                raise
            return  # the account went meanwhile; reconcile_secret deletes the Secret
        self._created.pop(uid, None)
        log.info("service account %s: token secret %s", key, name)

    async def _create_token(self, account: Obj) -> str:
        namespace, name = meta.namespace(account), meta.name(account)
        uid = (account.get("metadata") or {}).get("uid") or ""
        secret_name = f"{name}-token-{''.join(random.choice(_ALPHABET) for _ in range(5))}"
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": tokens.SECRET_TYPE,
            "metadata": {"name": secret_name, "namespace": namespace,
                         "annotations": {tokens.NAME_ANNOTATION: name, tokens.UID_ANNOTATION: uid}},
            "data": self._data(namespace=namespace, account=name, uid=uid, secret=secret_name),
        }
        await self.context.api.create(_SECRETS, secret, namespace=namespace)
        self._created[uid] = secret_name
        return secret_name

    def _data(self, *, namespace: str, account: str, uid: str, secret: str) -> dict[str, str]:
        assert self._key is not None
        claims = tokens.LegacyClaims(namespace=namespace, service_account=account, uid=uid, secret=secret)
        data = {"token": _b64(tokens.sign(claims.to_claims(), key=self._key).encode()),
                "namespace": _b64(namespace.encode())}
        if self._ca:
            data["ca.crt"] = _b64(self._ca)
        return data

    # ---- secrets -----------------------------------------------------------------------------

    async def reconcile_secret(self, key: str) -> None:
        """A token Secret belongs to a live account and holds a full token; a gone one is unreferenced."""
        namespace, name = meta.split_key(key)
        secret = self.secrets.get(key)
        if secret is None:
            await self._unreference(namespace, name)
            return
        if secret.get("type") != tokens.SECRET_TYPE or (secret.get("metadata") or {}).get("deletionTimestamp"):
            return
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        account_name = annotations.get(tokens.NAME_ANNOTATION) or ""
        account = self.accounts.get(f"{namespace}/{account_name}") if account_name else None
        if account is None and account_name:
            account = await self._live(_ACCOUNTS, namespace, account_name)
        if account is None or not _belongs(secret, account):
            await self._delete(secret)
            return
        await self._complete(secret, account)

    async def _complete(self, secret: Obj, account: Obj) -> None:
        """Fill in what a token Secret lacks: uid annotation, token, namespace, ca.crt."""
        namespace, uid = meta.namespace(secret), (account.get("metadata") or {}).get("uid") or ""
        data = secret.get("data") or {}
        wanted = {"namespace": _b64(namespace.encode())}
        if self._ca:
            wanted["ca.crt"] = _b64(self._ca)
        if not data.get("token"):
            wanted = self._data(namespace=namespace, account=meta.name(account), uid=uid, secret=meta.name(secret))
        missing_uid = not meta.annotations(secret).get(tokens.UID_ANNOTATION)
        if not missing_uid and all(data.get(k) == v for k, v in wanted.items()):
            return
        updated = copy.deepcopy(secret)
        updated["data"] = {**data, **wanted}
        updated["metadata"]["annotations"] = {**meta.annotations(secret), tokens.UID_ANNOTATION: uid}
        await self.context.api.update(_SECRETS, updated, namespace=namespace)
        log.info("token secret %s: filled in %s", meta.object_key(secret), ", ".join(sorted(wanted)))

    async def _delete(self, secret: Obj) -> None:
        uid = (secret.get("metadata") or {}).get("uid")
        try:
            await self.context.api.delete(_SECRETS, namespace=meta.namespace(secret), name=meta.name(secret),
                                          preconditions={"uid": uid} if uid else None)
        except ApiError as err:
            if not is_not_found(err) and err.code != 409:  # gone, or replaced by a new one: not ours to delete
                raise
            return
        log.info("token secret %s: its service account is gone; deleted", meta.object_key(secret))

    async def _unreference(self, namespace: str, name: str) -> None:
        """Remove a deleted Secret from the accounts that reference it (once a live GET says it is gone)."""
        accounts = [a for a in self.accounts.by_index(_BY_NAMESPACE, namespace)
                    if any(r.get("name") == name for r in a.get("secrets") or ())]
        if not accounts or await self._live(_SECRETS, namespace, name) is not None:
            return
        for account in accounts:
            updated = copy.deepcopy(account)
            updated["secrets"] = [r for r in account.get("secrets") or () if r.get("name") != name]
            await self.context.api.update(_ACCOUNTS, updated, namespace=namespace)
            log.info("service account %s: removed the reference to deleted secret %s", meta.object_key(account), name)

    async def _live(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        try:
            return await self.context.api.get(resource, namespace=namespace, name=name)
        except ApiError as err:
            if is_not_found(err):
                return None
            raise


def _account_key_of(secret: Obj) -> list[str]:
    """``namespace/account`` of a token Secret (index values: none for other Secrets)."""
    if secret.get("type") != tokens.SECRET_TYPE:
        return []
    account = meta.annotations(secret).get(tokens.NAME_ANNOTATION)
    return [f"{meta.namespace(secret)}/{account}"] if account else []


def _belongs(secret: Obj, account: Obj) -> bool:
    """A token Secret of this account: its name annotation, and its uid annotation if it has one."""
    annotations = meta.annotations(secret)
    return (secret.get("type") == tokens.SECRET_TYPE and annotations.get(tokens.NAME_ANNOTATION) == meta.name(account)
            and annotations.get(tokens.UID_ANNOTATION) in (None, "", (account.get("metadata") or {}).get("uid")))


def _ca_bytes(context: Context) -> bytes:
    """The CA this controller manager verifies the API server with (what pods need too); b"" if none."""
    config = context.api.config
    if config.ca_data is not None:
        return config.ca_data
    if config.ca_file is not None:
        return Path(config.ca_file).read_bytes()
    return b""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
