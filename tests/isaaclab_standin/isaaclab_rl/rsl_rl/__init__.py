"""Stand-in for `isaaclab_rl.rsl_rl.RslRlVecEnvWrapper`: an Isaac Lab task as an rsl_rl VecEnv (tests only)."""
import gymnasium as gym
import torch
from tensordict import TensorDict


class RslRlVecEnvWrapper:
    def __init__(self, env, clip_actions=None):
        self.env, self.clip_actions = env, clip_actions
        self.num_envs, self.device = self.unwrapped.num_envs, self.unwrapped.device
        self.max_episode_length = self.unwrapped.max_episode_length
        self.num_actions = gym.spaces.flatdim(self.unwrapped.single_action_space)
        self.env.reset()  # the rsl_rl runner does not reset

    @property
    def unwrapped(self):
        return self.env.unwrapped

    @property
    def cfg(self):
        return self.unwrapped.cfg

    def get_observations(self) -> TensorDict:
        return TensorDict(self.unwrapped._get_observations(), batch_size=[self.num_envs])

    def step(self, actions):
        if self.clip_actions is not None:
            actions = torch.clamp(actions, -self.clip_actions, self.clip_actions)
        obs, rew, terminated, truncated, extras = self.env.step(actions)
        dones = (terminated | truncated).to(dtype=torch.long)
        if not self.unwrapped.cfg.is_finite_horizon:
            extras["time_outs"] = truncated
        return TensorDict(obs, batch_size=[self.num_envs]), rew, dones, extras
