import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ICheckRequest, ICheckResponse } from '../../proto/envoy.js';
import { createNamespace, installCrds } from '../harness/crds.js';
import { SidecarClient } from '../harness/grpcClient.js';
import { type Kube, startKube } from '../harness/kube.js';
import { kubeRequest, serverSideApply } from '../harness/kubeHttp.js';
import { scratchDir, waitUntil } from '../harness/process.js';
import { seeded } from '../harness/random.js';
import { scrapedMetric } from '../harness/registry.js';
import { type Sidecar, startSidecar } from '../harness/sidecar.js';
import { repoRoot } from '../harness/tools.js';
import {
  ORDINARY_FEATURES,
  ordinaryRows,
  type TrainedModel,
  trainerPython,
  trainModel,
} from '../harness/trainer.js';

/**
 * Models published to a ConfigMap reach the sidecar through the API server (a real
 * kube-apiserver, the built sidecar in kubernetes mode): loaded as they are published, their
 * digest the RiskModel's pin or else the publisher's annotation; a ConfigMap whose bytes do
 * not match, or are no model, leaves the previous model scoring.
 */
const NS = 'risk-cm';
const FEATURES = [...ORDINARY_FEATURES];

const check = (sourceIp: string): ICheckRequest => ({
  attributes: {
    source: { address: { socketAddress: { address: sourceIp, portValue: 5555 } } },
    request: {
      http: {
        method: 'GET',
        host: 'app.local',
        path: '/api/items',
        scheme: 'http',
        protocol: 'HTTP/1.1',
        headers: {},
      },
    },
  },
});
const statusOf = (r: ICheckResponse) => (r.okResponse ? 200 : Number(r.deniedResponse?.status?.code ?? 0));

describe('risk models from ConfigMaps', () => {
  let kube: Kube;
  let kc: KubeConfig;
  let sidecar: Sidecar;
  let client: SidecarClient;
  let a: TrainedModel;
  let b: TrainedModel;
  const nsPath = (plural: string, group = '') =>
    `${group ? `/apis/${group}` : '/api/v1'}/namespaces/${NS}/${plural}`;

  /** The built sidecar reading policies and model ConfigMaps from the API server. */
  const startKubeSidecar = () =>
    startSidecar({
      policyPath: '',
      env: {
        NOX_CONFIG_SOURCE: 'kubernetes',
        NOX_KUBECONFIG: kube.kubeconfigPath,
        NOX_WATCH_NAMESPACES: NS,
        NOX_QUOTA_STORE: 'memory',
      },
    });

  const riskModel = (sha256?: string) => ({
    apiVersion: 'nox.dev/v1alpha1',
    kind: 'RiskModel',
    metadata: { name: 'scorer', namespace: NS },
    spec: {
      match: { paths: [{ type: 'Prefix', value: '/api' }] },
      failureMode: 'Closed',
      model: { configMapRef: { name: 'scorer-model', key: 'model.onnx' }, ...(sha256 ? { sha256 } : {}) },
      features: FEATURES,
      thresholds: { challenge: 0.999, deny: 0.9995, block: 0.9999 },
    },
  });
  const publish = (bytes: Buffer, sha256: string | undefined, labelled = true) =>
    serverSideApply(kc, nsPath('configmaps'), {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: 'scorer-model',
        namespace: NS,
        ...(labelled ? { labels: { 'nox.dev/risk-model': 'true' } } : {}),
        ...(sha256 ? { annotations: { 'nox.dev/sha256': sha256 } } : {}),
      },
      binaryData: { 'model.onnx': bytes.toString('base64') },
    });
  const running = (m: TrainedModel) =>
    scrapedMetric(sidecar.httpPort, 'nox_risk_model_running', {
      risk_model: `${NS}/scorer`,
      sha256: m.sha256,
    });
  const refusals = (reason: string) =>
    scrapedMetric(sidecar.httpPort, 'nox_risk_model_loads_total', { result: reason });
  /** One check from a new address: scored (a risk decision counted) and allowed. */
  const scoredAndAllowed = async (ip: string) => {
    const before = await scrapedMetric(sidecar.httpPort, 'nox_risk_decisions_total');
    expect(statusOf(await client.check(check(ip), 5000))).toBe(200);
    expect(await scrapedMetric(sidecar.httpPort, 'nox_risk_decisions_total')).toBe(before + 1);
  };

  beforeAll(async () => {
    [a, b] = await Promise.all([
      trainModel({ features: FEATURES, rows: ordinaryRows(2000, 11), contamination: 0.01 }),
      trainModel({ features: FEATURES, rows: ordinaryRows(2000, 12), contamination: 0.01 }),
    ]);
    kube = await startKube();
    kc = kube.kubeConfig();
    await installCrds(kc);
    await createNamespace(kc, NS);
    expect(
      (
        await serverSideApply(kc, nsPath('accesspolicies', 'nox.dev/v1alpha1'), {
          apiVersion: 'nox.dev/v1alpha1',
          kind: 'AccessPolicy',
          metadata: { name: 'open', namespace: NS },
          spec: { defaultAction: 'Allow' },
        })
      ).status,
    ).toBe(201);
    sidecar = await startKubeSidecar();
    client = new SidecarClient(sidecar.grpcPort);
  }, 180_000);

  afterAll(async () => {
    client?.close();
    await sidecar?.stop();
    await kube?.stop();
  });

  it('loads the model its publisher annotated, and each one published after it, as it is published', async () => {
    expect((await serverSideApply(kc, nsPath('riskmodels', 'nox.dev/v1alpha1'), riskModel())).status).toBe(
      201,
    );
    // Not yet published: nothing to score with, and failureMode Closed refuses.
    await waitUntil('the missing model reported', async () => (await refusals('ModelMissing')) >= 1, 30_000);
    expect(statusOf(await client.check(check('10.0.0.1'), 5000))).toBe(503);

    expect((await publish(a.bytes, a.sha256)).status).toBe(201);
    await waitUntil('model a running', async () => (await running(a)) === 1, 30_000);
    await scoredAndAllowed('10.0.0.2');

    expect((await publish(b.bytes, b.sha256.toUpperCase())).status).toBe(200);
    await waitUntil('model b running', async () => (await running(b)) === 1, 30_000);
    expect(await running(a)).toBe(0);
    await scoredAndAllowed('10.0.0.3');
  });

  it('bytes that do not match their digest, or are no model, leave the previous model scoring', async () => {
    // (Bytes that are not the running model, annotated with its digest, are not loaded either:
    // the digest names a model, and that one runs.)
    const garbage = Buffer.from('not an ONNX model');
    const refused = [
      { what: "another model's bytes", bytes: b.bytes, sha256: a.sha256, reason: 'DigestMismatch' },
      {
        what: 'bytes that are no model',
        bytes: garbage,
        sha256: createHash('sha256').update(garbage).digest('hex'),
        reason: 'InvalidModel',
      },
      { what: 'a model without a digest', bytes: a.bytes, sha256: undefined, reason: 'DigestMissing' },
    ];
    for (const [i, r] of refused.entries()) {
      const before = await refusals(r.reason);
      expect((await publish(r.bytes, r.sha256)).status).toBe(200);
      await waitUntil(
        `${r.what} refused (${r.reason})`,
        async () => (await refusals(r.reason)) > before,
        30_000,
      );
      expect(await running(b)).toBe(1);
      await scoredAndAllowed(`10.0.1.${i + 1}`);
    }
  });

  it("the RiskModel's own digest pins the model, whatever the annotation says", async () => {
    expect((await publish(a.bytes, b.sha256)).status).toBe(200);
    expect(
      (await serverSideApply(kc, nsPath('riskmodels', 'nox.dev/v1alpha1'), riskModel(a.sha256))).status,
    ).toBe(200);
    await waitUntil('model a running, pinned', async () => (await running(a)) === 1, 30_000);
    expect(await running(b)).toBe(0);
    await scoredAndAllowed('10.0.2.1');
  });

  it('a ConfigMap without the label is not read: the model is missing, the previous one keeps scoring', async () => {
    const missing = await refusals('ModelMissing');
    expect((await publish(b.bytes, b.sha256, false)).status).toBe(200);
    await waitUntil(
      'the unlabelled ConfigMap gone from view',
      async () => (await refusals('ModelMissing')) > missing,
      30_000,
    );
    expect(await running(a)).toBe(1);
    await scoredAndAllowed('10.0.3.1');
  });

  /**
   * The trainer as a training Job runs it, publishing with a ServiceAccount token that may
   * read and apply this one ConfigMap and nothing else.
   */
  it('training publishes its model to the ConfigMap; every sidecar loads it; a worse model is not published', async () => {
    const dir = scratchDir('risk-publish');
    const json = (body: object) => ({ body: JSON.stringify(body), contentType: 'application/json' });
    expect(
      (await kubeRequest(kc, 'POST', nsPath('serviceaccounts'), json({ metadata: { name: 'trainer' } })))
        .status,
    ).toBe(201);
    const rbac = '/apis/rbac.authorization.k8s.io/v1';
    const rules = [
      {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: ['scorer-model'],
        verbs: ['get', 'patch'],
      },
    ];
    expect(
      (
        await kubeRequest(
          kc,
          'POST',
          `${rbac}/namespaces/${NS}/roles`,
          json({ metadata: { name: 'trainer' }, rules }),
        )
      ).status,
    ).toBe(201);
    const binding = {
      metadata: { name: 'trainer' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'trainer' },
      subjects: [{ kind: 'ServiceAccount', name: 'trainer', namespace: NS }],
    };
    expect(
      (await kubeRequest(kc, 'POST', `${rbac}/namespaces/${NS}/rolebindings`, json(binding))).status,
    ).toBe(201);
    const tr = await kubeRequest(
      kc,
      'POST',
      `${nsPath('serviceaccounts')}/trainer/token`,
      json({ spec: { expirationSeconds: 3600 } }),
    );
    writeFileSync(join(dir, 'token'), (tr.body as { status: { token: string } }).status.token);
    writeFileSync(join(dir, 'ca.crt'), kube.caPem);

    // Unpinned again, and a second sidecar.
    expect((await serverSideApply(kc, nsPath('riskmodels', 'nox.dev/v1alpha1'), riskModel())).status).toBe(
      200,
    );
    const second = await startKubeSidecar();
    try {
      const train = async (name: string, rows: number[][]) => {
        const vectors = join(dir, `${name}.ndjson`);
        writeFileSync(
          vectors,
          rows
            .map((row, i) =>
              JSON.stringify({
                at: 1_700_000_000 + i * 10,
                features: Object.fromEntries(FEATURES.map((f, j) => [f, row[j]])),
              }),
            )
            .join('\n'),
        );
        const args = ['-m', 'nox_trainer.train', '--vectors', vectors, '--features', FEATURES.join(',')];
        args.push('--lookback-hours', '100', '--holdout-hours', String((rows.length * 10) / 5 / 3600));
        args.push('--min-events', '100', '--contamination', '0.01');
        args.push('--publish', `${NS}/scorer-model/model.onnx`);
        args.push('--kube-server', kube.server, '--kube-token-file', join(dir, 'token'));
        args.push('--kube-ca-file', join(dir, 'ca.crt'));
        const r = await promisify(execFile)(trainerPython(), args, { cwd: join(repoRoot, 'trainer') }).then(
          (o) => ({ code: 0, stdout: o.stdout }),
          (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
        );
        return { code: r.code, report: JSON.parse(r.stdout) as Record<string, unknown> };
      };

      const published = await train('ordinary', ordinaryRows(2500, 21));
      expect(published.code).toBe(0);
      expect(published.report.result).toBe('Published');
      const sha256 = published.report.sha256 as string;
      for (const s of [sidecar, second]) {
        await waitUntil(
          `the published model running on the sidecar on ${s.httpPort}`,
          async () =>
            (await scrapedMetric(s.httpPort, 'nox_risk_model_running', {
              risk_model: `${NS}/scorer`,
              sha256,
            })) === 1,
          30_000,
        );
      }
      await scoredAndAllowed('10.0.4.1');

      // Trained on traffic unlike the held-out rows, it would flag them: the one in force stays.
      const { next } = seeded(23);
      const narrow = Array.from({ length: 2000 }, () => [1 + Math.floor(next() * 3), 0, 0]);
      const skewed = [...narrow, ...ordinaryRows(500, 22)];
      const worse = await train('skewed', skewed);
      expect(worse.report).toMatchObject({ result: 'WorseThanCurrent' });
      expect(worse.code).toBe(4);
      const cm = (await kubeRequest(kc, 'GET', `${nsPath('configmaps')}/scorer-model`)).body as {
        metadata: { annotations: Record<string, string>; labels: Record<string, string> };
        binaryData: Record<string, string>;
      };
      expect(cm.metadata.annotations['nox.dev/sha256']).toBe(sha256);
      expect(
        createHash('sha256').update(Buffer.from(cm.binaryData['model.onnx']!, 'base64')).digest('hex'),
      ).toBe(sha256);
      expect(JSON.parse(cm.metadata.annotations['nox.dev/training']!)).toMatchObject({
        sha256,
        events: 2500,
      });
      expect(cm.metadata.labels['nox.dev/risk-model']).toBe('true');
      expect(
        await scrapedMetric(second.httpPort, 'nox_risk_model_running', {
          risk_model: `${NS}/scorer`,
          sha256,
        }),
      ).toBe(1);
    } finally {
      await second.stop();
    }
  }, 120_000);
});
