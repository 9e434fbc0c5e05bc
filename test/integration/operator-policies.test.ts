import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNamespace, installCrds } from '../harness/crds.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubeRequest, serverSideApply } from '../harness/kubeHttp.js';
import { testLog } from '../harness/log.js';
import { type RunningOperator, startOperator } from '../harness/operator.js';
import { waitUntil } from '../harness/process.js';
import { seeded } from '../harness/random.js';
import { scrapedMetric } from '../harness/registry.js';
import { trainModel } from '../harness/trainer.js';

/**
 * The built nox-operator (`node dist/operator/main.js`) against a real kube-apiserver,
 * running as an identity that has exactly the RBAC operator/rbac.ts declares: policy
 * status with reasons a user can act on, flipping when the referenced object appears.
 */

const NS = 'team-a';
const SYSTEM_NS = 'nox-system';
const api = `/apis/nox.dev/v1alpha1/namespaces/${NS}`;

interface Cond {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}
interface Obj {
  metadata: { generation?: number; resourceVersion?: string; creationTimestamp?: string };
  status?: { observedGeneration?: number; conditions?: Cond[]; loadedSha256?: string };
}

/** A real model for the test RiskModel's two features (hourOfDay, anonymous), or for `width` made-up ones. */
async function trainedModel(seed: number, width = 2) {
  const { next } = seeded(seed);
  const features = width === 2 ? ['hourOfDay', 'anonymous'] : ['subjectRate1m', 'writeMethod', 'pathNovelty'];
  const rows = Array.from({ length: 600 }, () =>
    width === 2
      ? [Math.floor(next() * 24), next() < 0.1 ? 1 : 0]
      : [1 + Math.floor(next() * 9), next() < 0.2 ? 1 : 0, 0],
  );
  return trainModel({ features, rows });
}

describe('nox-operator: policy status', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let op: RunningOperator;

  const get = async (plural: string, name: string): Promise<Obj> => {
    const r = await kubeRequest(kc, 'GET', `${api}/${plural}/${name}`);
    if (r.status !== 200) throw new Error(`GET ${plural}/${name}: ${r.status}`);
    return r.body as Obj;
  };
  const cond = (o: Obj, type: string) => o.status?.conditions?.find((c) => c.type === type);
  const apply = async (plural: string, obj: Record<string, unknown>) => {
    const r = await serverSideApply(kc, `${api}/${plural}`, obj);
    if (r.status !== 200 && r.status !== 201)
      throw new Error(`apply ${plural}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Obj;
  };
  const applyCore = async (plural: string, obj: Record<string, unknown>) => {
    const r = await serverSideApply(kc, `/api/v1/namespaces/${NS}/${plural}`, obj);
    if (r.status !== 200 && r.status !== 201)
      throw new Error(`apply ${plural}: ${r.status} ${JSON.stringify(r.body)}`);
  };
  /** Waits until Ready has `status` (and `reason`) for the object's current generation; returns it and the time taken. */
  const waitReady = async (
    plural: string,
    name: string,
    status: string,
    reason?: string,
    timeoutMs = 10_000,
  ) => {
    let last: Obj | undefined;
    const ms = await waitUntil(
      `${plural}/${name} Ready ${status}/${reason}`,
      async () => {
        last = await get(plural, name);
        const c = cond(last, 'Ready');
        return (
          c?.status === status &&
          (!reason || c.reason === reason) &&
          last.status?.observedGeneration === last.metadata.generation
        );
      },
      timeoutMs,
      { intervalMs: 50 },
    ).catch((e: Error) => {
      throw new Error(`${e.message}; status ${JSON.stringify(last?.status)}`);
    });
    return { obj: last as Obj, ready: cond(last as Obj, 'Ready')!, ms };
  };

  const provider = (name: string, spec: Record<string, unknown> = {}) => ({
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'OAuth2Provider',
    metadata: { name, namespace: NS },
    spec: { type: 'oidc', issuer: 'https://sso.example.com', clientId: 'nox', ...spec },
  });
  const accessPolicy = (name: string, spec: Record<string, unknown>) => ({
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'AccessPolicy',
    metadata: { name, namespace: NS },
    spec: { defaultAction: 'Deny', ...spec },
  });
  const riskModel = (name: string, model: Record<string, unknown>) => ({
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'RiskModel',
    metadata: { name, namespace: NS },
    spec: {
      mode: 'DryRun',
      failureMode: 'Open',
      model,
      features: ['hourOfDay', 'anonymous'],
      thresholds: { challenge: 0.5, deny: 0.8, block: 0.9 },
      blockDuration: '15m',
    },
  });
  const quotaPolicy = (name: string, requests: number) => ({
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'QuotaPolicy',
    metadata: { name, namespace: NS },
    spec: {
      mode: 'Enforce',
      failureMode: 'Closed',
      subject: [{ type: 'User' }],
      defaultTier: 'free',
      tiers: [{ name: 'free', limits: [{ requests, window: '1h' }] }],
    },
  });

  beforeAll(async () => {
    const t0 = Date.now();
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, NS);
    op = await startOperator(kube, { name: 'nox-operator-policies-a', systemNamespace: SYSTEM_NS });
    testLog(`setup (kube-apiserver, CRDs, operator ready): ${Date.now() - t0} ms`);
  });
  afterAll(async () => {
    await op?.service.stop();
    await kube?.stop();
  });

  it('an AccessPolicy naming a missing OAuth2Provider is ProviderNotFound, and Ready within seconds of the provider being created', async () => {
    await apply('accesspolicies', accessPolicy('needs-sso', { providers: ['sso'] }));
    const missing = await waitReady('accesspolicies', 'needs-sso', 'False', 'ProviderNotFound');
    expect(missing.ready.message).toContain(`OAuth2Provider ${NS}/sso does not exist`);
    expect(cond(missing.obj, 'Accepted')).toMatchObject({ status: 'True', reason: 'Valid' });

    const t0 = Date.now();
    await apply('oauth2providers', provider('sso'));
    await waitReady('accesspolicies', 'needs-sso', 'True', 'Ready');
    const flip = Date.now() - t0;
    testLog(`AccessPolicy ProviderNotFound → Ready after the provider was created: ${flip} ms`);
    expect(flip).toBeLessThan(5000);
    expect((await waitReady('oauth2providers', 'sso', 'True', 'Ready')).obj.status?.observedGeneration).toBe(
      1,
    );
  });

  it('an AccessPolicy naming a host another namespace named first is HostTaken, and Ready once the owner lets it go', async () => {
    const other = 'tenant-b';
    await createNamespace(kc, other);
    const owner = await apply(
      'accesspolicies',
      accessPolicy('shop-site', { match: { hosts: ['shop.test'] } }),
    );
    await waitReady('accesspolicies', 'shop-site', 'True', 'Ready');
    // Named first means an older creationTimestamp (one-second resolution).
    const created = Date.parse(String(owner.metadata.creationTimestamp));
    await waitUntil('the next second', () => Date.now() >= created + 1000, 5000, { intervalMs: 50 });
    const otherPath = `/apis/nox.dev/v1alpha1/namespaces/${other}/accesspolicies`;
    const grab = {
      ...accessPolicy('grab', { match: { hosts: ['shop.test', 'b.test'] }, priority: 1000 }),
      metadata: { name: 'grab', namespace: other },
    };
    expect((await serverSideApply(kc, otherPath, grab)).status).toBe(201);
    const readyOf = async () => {
      const r = await kubeRequest(kc, 'GET', `${otherPath}/grab`);
      return cond(r.body as Obj, 'Ready');
    };
    await waitUntil('grab to be HostTaken', async () => (await readyOf())?.reason === 'HostTaken', 10_000, {
      intervalMs: 50,
    });
    expect((await readyOf())?.message).toContain(
      `spec.match.hosts: shop.test belongs to namespace ${NS} (AccessPolicy ${NS}/shop-site named it first)`,
    );
    // The owner itself is untouched, and gives the host up by being deleted.
    expect(cond(await get('accesspolicies', 'shop-site'), 'Ready')?.status).toBe('True');
    const t0 = Date.now();
    expect((await kubeRequest(kc, 'DELETE', `${api}/accesspolicies/shop-site`)).status).toBe(200);
    await waitUntil('grab to be Ready', async () => (await readyOf())?.status === 'True', 10_000, {
      intervalMs: 50,
    });
    testLog(`AccessPolicy HostTaken → Ready after the owner was deleted: ${Date.now() - t0} ms`);
  });

  it('an OAuth2Provider whose Secret is missing is SecretNotFound, then SecretKeyNotFound, then Ready; its AccessPolicy follows', async () => {
    await apply(
      'oauth2providers',
      provider('corp', { clientSecretRef: { name: 'corp-oauth', key: 'client-secret' } }),
    );
    await apply('accesspolicies', accessPolicy('corp-api', { providers: ['corp'] }));
    const notFound = await waitReady('oauth2providers', 'corp', 'False', 'SecretNotFound');
    expect(notFound.ready.message).toContain(`Secret ${NS}/corp-oauth does not exist`);
    const dependent = await waitReady('accesspolicies', 'corp-api', 'False', 'ProviderNotReady');
    expect(dependent.ready.message).toContain('SecretNotFound');

    await applyCore('secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'corp-oauth', namespace: NS },
      stringData: { wrong: 'x' },
    });
    const noKey = await waitReady('oauth2providers', 'corp', 'False', 'SecretKeyNotFound');
    expect(noKey.ready.message).toContain('has no key "client-secret" (it has "wrong")');

    const t0 = Date.now();
    await applyCore('secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'corp-oauth', namespace: NS },
      stringData: { 'client-secret': 's3cret' },
    });
    await waitReady('oauth2providers', 'corp', 'True', 'Ready');
    const providerMs = Date.now() - t0;
    await waitReady('accesspolicies', 'corp-api', 'True', 'Ready');
    const policyMs = Date.now() - t0;
    testLog(`Secret created → provider Ready ${providerMs} ms, dependent AccessPolicy Ready ${policyMs} ms`);
    expect(policyMs).toBeLessThan(5000);
    // The status never carries the value.
    expect(JSON.stringify((await get('oauth2providers', 'corp')).status)).not.toContain('s3cret');
  });

  it('a login provider with a malformed session key is InvalidEncryptionKey until the key is fixed', async () => {
    await applyCore('secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'session', namespace: NS },
      stringData: { key: 'short' },
    });
    await apply(
      'oauth2providers',
      provider('web', {
        login: {
          enabled: true,
          callbackPath: '/oauth2/callback/web',
          encryptionKeySecretRef: { name: 'session', key: 'key' },
        },
      }),
    );
    const bad = await waitReady('oauth2providers', 'web', 'False', 'InvalidEncryptionKey');
    expect(bad.ready.message).toContain('AES-256 needs 32');
    await applyCore('secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'session', namespace: NS },
      stringData: { key: randomBytes(32).toString('base64') },
    });
    await waitReady('oauth2providers', 'web', 'True', 'Ready');
  });

  it("a RiskModel's training runs as a CronJob of the trainer, whose ServiceAccount may patch its model ConfigMap and nothing else; removed with training", async () => {
    const spec = riskModel('trained-daily', {
      configMapRef: { name: 'daily-model', key: 'model.onnx' },
    }).spec;
    const withTraining = (training?: object) => ({
      ...riskModel('trained-daily', spec.model),
      spec: { ...spec, ...(training ? { training } : {}) },
    });
    await apply(
      'riskmodels',
      withTraining({
        schedule: '0 3 * * *',
        lookback: '2d',
        auditDatabase: { name: 'audit-db', key: 'ro-uri' },
      }),
    );
    const cronJobs = `/apis/batch/v1/namespaces/${NS}/cronjobs`;
    let cron: { spec: Record<string, unknown> } | undefined;
    await waitUntil(
      'the training CronJob',
      async () => {
        const r = await kubeRequest(kc, 'GET', `${cronJobs}/trained-daily-training`);
        cron = r.status === 200 ? (r.body as { spec: Record<string, unknown> }) : undefined;
        return cron !== undefined;
      },
      10_000,
    );
    const container = (
      cron!.spec as {
        jobTemplate: { spec: { template: { spec: { containers: { image: string; args: string[] }[] } } } };
      }
    ).jobTemplate.spec.template.spec.containers[0]!;
    expect(container.image).toBe('ghcr.io/nox-dev/nox-trainer:latest');
    expect(container.args).toEqual(expect.arrayContaining(['--lookback-hours', '48', '--publish']));
    // The ConfigMap exists, labelled, before any model: the trainer needs only patch on it.
    const cm = await kubeRequest(kc, 'GET', `/api/v1/namespaces/${NS}/configmaps/daily-model`);
    expect((cm.body as { metadata: { labels: Record<string, string> } }).metadata.labels).toEqual({
      'nox.dev/risk-model': 'true',
    });

    // As the trainer's ServiceAccount (a real token): its model ConfigMap yes, another no.
    const tr = await kubeRequest(
      kc,
      'POST',
      `/api/v1/namespaces/${NS}/serviceaccounts/trained-daily-training/token`,
      { body: JSON.stringify({ spec: { expirationSeconds: 600 } }), contentType: 'application/json' },
    );
    const token = (tr.body as { status: { token: string } }).status.token;
    const asTrainer = (name: string) =>
      new Promise<number>((resolve, reject) => {
        const url = new URL(
          `/api/v1/namespaces/${NS}/configmaps/${name}?fieldManager=nox-trainer&force=true`,
          kube.server,
        );
        const req = httpsRequest(
          url,
          {
            method: 'PATCH',
            ca: kube.caPem,
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/apply-patch+yaml' },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end(
          JSON.stringify({
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name, namespace: NS, annotations: { 'nox.dev/sha256': 'a'.repeat(64) } },
            binaryData: { 'model.onnx': Buffer.from('bytes').toString('base64') },
          }),
        );
      });
    expect(await asTrainer('daily-model')).toBe(200);
    expect(await asTrainer('scorer-model')).toBe(403);

    await apply('riskmodels', withTraining());
    const gone = [
      `${cronJobs}/trained-daily-training`,
      `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings/trained-daily-training`,
      `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles/trained-daily-training`,
      `/api/v1/namespaces/${NS}/serviceaccounts/trained-daily-training`,
    ];
    await waitUntil(
      'the training CronJob, Role, RoleBinding and ServiceAccount gone',
      async () =>
        (await Promise.all(gone.map(async (p) => (await kubeRequest(kc, 'GET', p)).status))).every(
          (c) => c === 404,
        ),
      10_000,
    );
    // The model ConfigMap stays: it holds the model in force.
    expect((await kubeRequest(kc, 'GET', `/api/v1/namespaces/${NS}/configmaps/daily-model`)).status).toBe(
      200,
    );
  });

  it('a RiskModel whose ConfigMap model has another sha256 is ModelDigestMismatch; fixing the digest makes it Ready at the new generation', async () => {
    const { bytes: model, sha256: digest } = await trainedModel(1);
    const wrong = createHash('sha256').update('something else').digest('hex');
    await apply(
      'riskmodels',
      riskModel('scorer', { configMapRef: { name: 'scorer-model', key: 'model.onnx' }, sha256: wrong }),
    );
    await waitReady('riskmodels', 'scorer', 'False', 'ConfigMapNotFound');

    await applyCore('configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'scorer-model', namespace: NS, labels: { 'nox.dev/risk-model': 'true' } },
      binaryData: { 'model.onnx': model.toString('base64') },
    });
    const mismatch = await waitReady('riskmodels', 'scorer', 'False', 'ModelDigestMismatch');
    expect(mismatch.ready.message).toContain(digest);
    expect(mismatch.ready.message).toContain(wrong);
    expect(mismatch.obj.status?.observedGeneration).toBe(1);

    await apply(
      'riskmodels',
      riskModel('scorer', { configMapRef: { name: 'scorer-model', key: 'model.onnx' }, sha256: digest }),
    );
    const ok = await waitReady('riskmodels', 'scorer', 'True', 'Ready');
    expect(ok.obj.metadata.generation).toBe(2);
    expect(ok.obj.status?.observedGeneration).toBe(2);
    expect(ok.ready.observedGeneration).toBe(2);

    // Replacing the model bytes (not the spec) is noticed too.
    await applyCore('configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'scorer-model', namespace: NS, labels: { 'nox.dev/risk-model': 'true' } },
      binaryData: { 'model.onnx': randomBytes(100).toString('base64') },
    });
    await waitReady('riskmodels', 'scorer', 'False', 'ModelDigestMismatch');
  });

  it("a RiskModel's published model is loaded as the sidecars load it: status.loadedSha256 names it; one refused says why and leaves loadedSha256 as it was", async () => {
    const [good, newer, narrow] = await Promise.all([trainedModel(2), trainedModel(3), trainedModel(4, 3)]);
    const publish = (bytes: Buffer, sha256: string) =>
      applyCore('configmaps', {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {
          name: 'published',
          namespace: NS,
          labels: { 'nox.dev/risk-model': 'true' },
          annotations: { 'nox.dev/sha256': sha256 },
        },
        binaryData: { 'model.onnx': bytes.toString('base64') },
      });
    await publish(good.bytes, good.sha256);
    await apply(
      'riskmodels',
      riskModel('trained', { configMapRef: { name: 'published', key: 'model.onnx' } }),
    );
    const ok = await waitReady('riskmodels', 'trained', 'True', 'Ready');
    expect(ok.obj.status?.loadedSha256).toBe(good.sha256);
    expect(ok.ready.message).toContain('and loads');

    const garbage = randomBytes(2048);
    await publish(garbage, createHash('sha256').update(garbage).digest('hex'));
    const invalid = await waitReady('riskmodels', 'trained', 'False', 'InvalidModel');
    expect(invalid.ready.message).toContain('onnxruntime refused the model');
    expect(invalid.obj.status?.loadedSha256).toBe(good.sha256);

    await publish(narrow.bytes, narrow.sha256);
    const wrong = await waitReady('riskmodels', 'trained', 'False', 'ModelWrongInputs');
    expect(wrong.ready.message).toContain('the model takes 3 features, the RiskModel lists 2');
    expect(wrong.obj.status?.loadedSha256).toBe(good.sha256);

    await publish(newer.bytes, newer.sha256);
    const swapped = await waitReady('riskmodels', 'trained', 'True', 'Ready');
    expect(swapped.obj.status?.loadedSha256).toBe(newer.sha256);
  });

  it('status.observedGeneration follows spec changes; lastTransitionTime stays while Ready stays True', async () => {
    await apply('quotapolicies', quotaPolicy('quotas', 100));
    const first = await waitReady('quotapolicies', 'quotas', 'True', 'Ready');
    expect(first.obj.status?.observedGeneration).toBe(1);
    for (const [i, requests] of [200, 300, 400].entries()) {
      await apply('quotapolicies', quotaPolicy('quotas', requests));
      const r = await waitReady('quotapolicies', 'quotas', 'True', 'Ready');
      expect(r.obj.metadata.generation).toBe(i + 2);
      expect(r.obj.status?.observedGeneration).toBe(i + 2);
      expect(cond(r.obj, 'Accepted')?.observedGeneration).toBe(i + 2);
      expect(r.ready.lastTransitionTime).toBe(first.ready.lastTransitionTime);
    }
    // A status write does not make the operator write again (no reconcile loop on its own writes).
    // The signal that the operator has processed the events after its status write: a policy
    // created after it is Ready and nothing is left in its QuotaPolicy queue.
    const rv = (await get('quotapolicies', 'quotas')).metadata.resourceVersion;
    await apply('quotapolicies', quotaPolicy('quotas-marker', 100));
    await waitReady('quotapolicies', 'quotas-marker', 'True', 'Ready');
    await waitUntil(
      'an empty QuotaPolicy queue',
      async () =>
        (await scrapedMetric(op.httpPort, 'nox_operator_queue_depth', { kind: 'QuotaPolicy' })) === 0,
      5000,
      { intervalMs: 50 },
    );
    expect((await get('quotapolicies', 'quotas')).metadata.resourceVersion).toBe(rv);
  });

  it('survives an API server restart: watches come back and a fix made afterwards is picked up within seconds', async () => {
    await apply('accesspolicies', accessPolicy('after-restart', { providers: ['late'] }));
    await waitReady('accesspolicies', 'after-restart', 'False', 'ProviderNotFound');
    const restartsBefore = await scrapedMetric(op.httpPort, 'nox_operator_watch_restarts_total');

    const t0 = Date.now();
    await kube.restartApiServer();
    testLog(`kube-apiserver restarted in ${Date.now() - t0} ms`);
    // Created right away: the operator's watches may still be reconnecting.
    const t1 = Date.now();
    await apply('oauth2providers', provider('late'));
    await waitReady('accesspolicies', 'after-restart', 'True', 'Ready', 30_000);
    testLog(`after the restart, provider created → AccessPolicy Ready: ${Date.now() - t1} ms`);

    await waitUntil(
      'every watch healthy again',
      async () => {
        const text = await (await fetch(`http://127.0.0.1:${op.httpPort}/metrics`)).text();
        const healthy = text.split('\n').filter((l) => l.startsWith('nox_operator_watch_healthy{'));
        return healthy.length > 0 && healthy.every((l) => l.endsWith(' 1'));
      },
      30_000,
    );
    expect(await scrapedMetric(op.httpPort, 'nox_operator_watch_restarts_total')).toBeGreaterThan(
      restartsBefore,
    );
    expect((await fetch(`http://127.0.0.1:${op.httpPort}/readyz`)).status).toBe(200);
    expect(op.service.exited()).toBe(false);
    expect(await scrapedMetric(op.httpPort, 'nox_operator_leader')).toBe(1);
  });

  it('counts reconciles and reports no errors for healthy policies', async () => {
    expect(
      await scrapedMetric(op.httpPort, 'nox_operator_reconciles_total', {
        kind: 'AccessPolicy',
        result: 'success',
      }),
    ).toBeGreaterThan(0);
    expect(
      await scrapedMetric(op.httpPort, 'nox_operator_reconcile_seconds_count', { kind: 'RiskModel' }),
    ).toBeGreaterThan(0);
    const text = await (await fetch(`http://127.0.0.1:${op.httpPort}/metrics`)).text();
    expect(text).toContain('nox_operator_queue_depth{kind="QuotaPolicy"');
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${op.service.child.pid}/status`, 'utf8'))?.[1];
    testLog(`nox-operator resident memory after the suite: ${Math.round(Number(rss) / 1024)} MB`);
  });
});
